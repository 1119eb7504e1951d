"""Deploys, rollback, pause, maintenance and the gateway's own restart.

service.py  Deployer: kamal-proxy's sequence (a new target, healthy, swapped in, old drained)
api.py      the admin API's /api/deploy, rollback, maintenance and restart endpoints
cli.py      gateway deploy|rollback|pause|resume|maintenance|restart
"""
