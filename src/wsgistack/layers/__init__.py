"""The entry's layers around an app, one module each: `wsgistack.entry` copies into a
service's entry only the layers its service uses (each module's part after its marker line,
after the modules it imports from). Standard library only.
"""
