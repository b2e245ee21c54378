from dslc.cli import entry

entry()
