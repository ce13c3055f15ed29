"""Survey-scale jobs driven from the command line (``aion-fast encode``, ``aion-fast merge-manifest``)."""
