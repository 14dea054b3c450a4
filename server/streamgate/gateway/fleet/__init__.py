"""The backends the gateway streams from: the topology built from the config (replicas, pools,
routes, rules, templates), their sessions, health checks and load scraping, shadow copies of
requests, and the embedded engine started when no backend is configured."""
