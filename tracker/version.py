"""The version of the package (its distribution is ``rabbitmq-task-tracker``; the import name
and the command are ``tracker``): the one place it is written, read by the build too."""

__version__ = "0.1.0"
DISTRIBUTION = "rabbitmq-task-tracker"
