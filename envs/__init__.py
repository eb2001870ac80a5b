"""Tasks and samplers: one env's episodes (``task``), many samplers stepped together (``samplers``), the env
group's class (``factory``) and the envpool training backend (``envpool_backend``)."""
