from services.cli.main import cli

# the same completion variable as the installed ``shoal`` command
cli(complete_var="_SHOAL_COMPLETE")
