from services.dashboard.command import command

command()
