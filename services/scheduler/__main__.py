from services.scheduler.command import command

command()
