"""Training jobs and the models they make (Relay's Step 5, issue 16).

A training job is a row of the jobs table (kind ``training``) that its own ``JobRunner`` claims
with a lease (``server.jobs``); ``TrainingHandler`` (``handler``) reads the published set
(``material``), trains in a child process (``child``) and stores the model through
``server.detectors``. ``TrainingService`` (``service``) and ``ModelService``
(``models_service``) are what the HTTP handlers (``routes``) call; ``views`` shapes rows for
the wire, ``context`` starts and stops it all with the app.
"""
