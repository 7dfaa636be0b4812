"""diplotone training: corpus, fine-tuning, evaluation, calibration, baselines and the promotion gate."""
