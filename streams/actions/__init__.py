"""Where actions leave the monitor.

``agent``      the policy agent: metrics topic in, decisions on the actions topic, then dispatched
``killswitch`` the compacted control topic (engage, release, watch)
``notify``     Alertmanager's v2 API, signed webhooks, the rollback webhook (retries, idempotent)
``log``        reading the actions topic back (restart, CLI, demo)
"""
