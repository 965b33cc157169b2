from services.mesh.command import command

command()
