"""Running a rendered AdaptationJob on this machine: the ``kadapt run`` command and the pods' executor.

The executor takes exactly what the renderer produces for a cluster (ConfigMap, Service,
Indexed Job) and runs each pod as a local process, so that ``kadapt run`` checks the very
objects an operator would apply, and end-to-end tests can play kubelet with the same code.
Nothing here imports torch: the pods are separate processes.
"""
