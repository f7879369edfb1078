# Reads a File through stdin: its name may hold any character but `/` (CWL), e.g. `item #1.txt`
cwlVersion: v1.2
class: CommandLineTool
inputs:
  file1: File
baseCommand: [cat]
stdin: $(inputs.file1.path)
stdout: output
outputs:
  output: {type: File, outputBinding: {glob: output}}
