"""The Swarm runtime: each team instance a one-replica Docker Swarm service.

runtime.py   SwarmRuntime: the docker runtime's hardening, labels and image, as services;
             placement of a team on a node (recorded in the control store)
provider.py  SwarmProvider: services and their tasks -> the docker runtime's full snapshots
move.py      move a team to another node (pause, copy, start there, cut over, or undo)
api.py       POST /api/teams/{slug}/move (``gateway teams move``, in gateway/deploy/cli.py)

Deploys, rollbacks and pauses are the gateway's own (one service per instance, started,
checked, cut over, drained, removed): Swarm's rolling update never runs.
"""
