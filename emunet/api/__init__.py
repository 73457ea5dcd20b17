"""emunet's Kubernetes API server: real kubectl and client libraries drive the cluster.

A view of the state file (`emunet.state.store`), reloaded on SIGHUP like every node process;
writes go back through the supervisor's control socket. Run by the supervisor as
`python -m emunet.api --state FILE --port N`, on 127.0.0.1 only (docs/architecture.md).
"""
