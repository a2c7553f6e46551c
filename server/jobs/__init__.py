"""Jobs on media (issue 14): a job is a row with a state machine (``repository``), claimed with
a lease by ``JobRunner`` (``runner``), analysed by ``SoundEventsJob`` (``sound_events``),
announced by ``JobWebhooks`` (``webhooks``); ``JobService`` (``service``) is what the HTTP
handlers (``routes``) call."""
