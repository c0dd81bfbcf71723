"""The entry's layers around an app, one module each: `wsgistack.entry` copies into a
service's entry only those its service uses (each module after its marker line, after the
modules it imports from). Standard library only.
"""
