# Positions from expressions, and characters outside ASCII in the document and in a tool's output
cwlVersion: v1.2
class: CommandLineTool
requirements:
  InlineJavascriptRequirement: {}
inputs:
  one: {type: int, default: 1, inputBinding: {position: $(self)}}
  two: {type: int, default: 2, inputBinding: {valueFrom: sensation!, position: "${return self+1;}"}}
arguments:
  - {position: "${return 2;}", valueFrom: singular}
  - {position: "${return null;}", valueFrom: "🕺"}
baseCommand: echo
stdout: said.txt
outputs:
  said: {type: File, outputBinding: {glob: said.txt}}
