"""Requirements builds: the environments of functions with dependencies, built once per set of
requirements (`builds.builder.Builder`), checked (`builds.requirements`) and packed
(`builds.packing`). No HTTP: the gateway's deploy handler calls `Builder.ensure`."""
