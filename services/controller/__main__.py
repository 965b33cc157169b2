from services.controller.command import command

command()
