"""Several bridges as one cluster (issue 16): the bus between bridges on the shared
PostgreSQL store (`bus`, `share`) and the merged agent states (`agents`); the tenant config
applied to every node or to none (`settings`, `peers`, `apply`)."""
