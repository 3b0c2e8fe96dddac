"""How a conformance run is driven: the one Trainer builder (:mod:`.trainer`), the kit's run callbacks, launching
ranks as processes, and one module per kind of run: fit (stop-and-go), probe (data modules), predict (writers)."""
