"""Training and fine-tuning recipes for the zoo, built from timm's pieces under Accelerate.

Run from a checkout: ``accelerate launch -m recipes.train --config recipes/configs/<name>.yaml``,
``python -m recipes.evaluate --run RUN --data-dir D``.
"""
