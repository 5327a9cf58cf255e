"""Training: one fit() loop (fit.py) for both tasks; instance.py and semantic.py supply model, data, loss and
validation; config.py reads the train: section."""
