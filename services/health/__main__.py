from services.health.command import command

command()
