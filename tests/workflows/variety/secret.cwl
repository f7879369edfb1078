cwlVersion: v1.2
class: CommandLineTool
doc: Counts the bytes of a password it is given as a secret (cwltool's extension); prints nothing of it.
$namespaces: {cwltool: "http://commonwl.org/cwltool#"}
hints:
  cwltool:Secrets:
    secrets: [password]
requirements:
  InitialWorkDirRequirement:
    listing:
      - entryname: pw.txt
        entry: $(inputs.password)
baseCommand: [sh, -c, "wc -c < pw.txt"]
inputs:
  password: string
  user: string
stdout: counted.txt
outputs:
  counted: stdout
