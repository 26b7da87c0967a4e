"""The bastion.detector's bastion.gateway side: features and events, controls, risk, labels, reload, training data."""
