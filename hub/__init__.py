"""Publish scalenet-models weights on the Hugging Face Hub: export folders, model cards, push and pull.

Inputs are the files the other tools write (a recipe run directory, a searched family directory);
outputs are folders that ``timm.create_model("local-dir:...")`` and ``"hf-hub:..."`` load.
"""
from .errors import HubError
from .export import ExportResult, export_model
from .source import ExportSource, load_source
from .push import PushPlan, plan_push, push_folder
from .pull import pull

__all__ = ['ExportResult', 'ExportSource', 'HubError', 'PushPlan', 'export_model', 'load_source', 'plan_push',
           'pull', 'push_folder']
