"""The maths of ibhebb as pure functions of tensors (the functional core).

Nothing here imports from the rest of ibhebb: kernels and HSIC
(:mod:`.kernels`), the global signal ξ (:mod:`.signals`), pHSIC
(:mod:`.phsic`). Models, memories, rules and the engine call these.
"""
