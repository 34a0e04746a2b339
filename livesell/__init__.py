"""livesell: the process entry points (CLI, app assembly, runner) over core and the packages."""
