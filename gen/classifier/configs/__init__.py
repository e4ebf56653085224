"""Feature classifier configs, shipped with the package: `gen train --config=gen.classifier.configs.NAME`."""
