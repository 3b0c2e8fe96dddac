"""The loader backend of DataModuleResumeConformance: a recipe's stateful loader (torchdata's StatefulDataLoader or
its own), iterated by the kit's epoch loop, outside Lightning."""
