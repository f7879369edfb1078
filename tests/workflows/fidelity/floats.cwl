# Floats as cwltool prints them on a command line: from the text they were written as (defaults here, and
# the job order's), e.g. 1.23e5 -> 123000, 1.50 -> 1.50, 1.23e-05 -> 0.0000123
cwlVersion: v1.2
class: CommandLineTool
baseCommand: echo
arguments: [-n]
inputs:
  small: {type: float, default: 0.00001, inputBinding: {position: 1}}
  tiny: {type: float, default: 1.23e-05, inputBinding: {position: 2}}
  big: {type: float, default: 1.23e5, inputBinding: {position: 3}}
  trailing: {type: float, default: 1.50, inputBinding: {position: 4}}
  given: {type: "float[]", inputBinding: {position: 5}}
stdout: floats.txt
outputs:
  floats: {type: File, outputBinding: {glob: floats.txt}}
