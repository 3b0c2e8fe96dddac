"""The attached backend: a recipe's own trainer runs the loop, saves and resumes; the kit tells it how far to train
and where to save (:class:`.run.AttachedRun`) and watches through torch's hooks."""
