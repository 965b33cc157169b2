from services.provisioner.command import command

command()
