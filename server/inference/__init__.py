"""Inference jobs (Relay's Step 6): a team's custom detector run over uploaded or media files.

``repository`` keeps jobs and their files as rows, ``service`` is the API's logic and
``routes`` its handlers, ``views`` shapes rows for the client (a job's status is derived from
its files'), ``worker`` claims waiting files and feeds them to ``child``, the process where
``detect`` turns samples into detections block by block; ``context`` starts it all in
``create_app``.
"""
