"""What a reader sees: encodings, figures by kind, figure specs, number formatting, the summary.
Reads a ``Study`` and analysis tables; never loads data or imports the engine."""
