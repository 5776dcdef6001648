"""An adapter whose import fails, to check the error names the cause."""

raise RuntimeError("this adapter cannot be imported")
