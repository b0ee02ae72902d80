"""cloudnic.cni — the CNI spec as values: pure Python, no I/O, imports only cloudnic.errors.

* ``version``    supported spec versions, negotiation, feature predicates
* ``env``        ``CNI_*`` environment -> ``Env``
* ``config``     stdin network configuration -> ``NetConf``; ``ci_get``
* ``hints``      what a request asks for (IPs, MAC, network, subnet, SGs, pod) -> ``Hints``
* ``result``     ``Result`` and its conversion to/from every supported version
* ``errors_out`` error objects and the VERSION answer as bytes
"""
