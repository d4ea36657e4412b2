"""onnxg on Ray (the optional ``onnxg[ray]`` extra): the only package that imports ``ray``.

``session`` starts or joins a cluster (``cluster.ray_session``), ``serve`` deploys whole onnxg
apps as Ray Serve replicas (``cluster.serve``), ``proxy`` turns the Serve proxy's own plain-text
errors into OpenAI error JSON (``cluster.proxy``) and ``embed`` spreads ``onnxg embed`` over
Ray actors (``cluster.embed``). The CLI reaches them lazily, so nothing else imports Ray.
"""
