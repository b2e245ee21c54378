"""The intermediate representations: the spec's syntax tree (`ast`) and the checked graph (`graph`)."""
