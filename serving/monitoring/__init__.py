"""Monitoring the models in the field: shadow (challenger) models, real-world performance,
drift alarms, the promotion gate and the hold fallback.

- :mod:`.stats`: Wilson intervals and CUSUM charts (pure functions);
- :mod:`.monitor`: the per-process monitor thread that runs behind the workers: input
  statistics and the challenger's score of every completed job, stored apart;
- :mod:`.drift`: the drift alarms (CUSUM on flag rate, score and input statistics);
- :mod:`.compare`: champion against challenger on the same studies;
- :mod:`.performance`: real-world performance per version, hospital, device and modality;
- :mod:`.gate`: the promotion gate of ``oncotriage promote``.
"""
