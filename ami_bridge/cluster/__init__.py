"""Several bridges as one cluster (issue 16): the shared-state bus (`bus`), and the
tenant config applied to every node or to none (`settings`, `peers`, `apply`)."""
