# Writes `target` (outside the job's inputs and outputs) and outputs a link to it: the CWL spec makes that an
# error (the conformance test illegal_symlink), which cwltool without a container lets through
cwlVersion: v1.2
class: CommandLineTool
requirements:
  ShellCommandRequirement: {}
inputs:
  target: string
arguments:
  - {valueFrom: "echo outside > $(inputs.target) && ln -s $(inputs.target) link.txt", shellQuote: false}
outputs:
  link: {type: File, outputBinding: {glob: link.txt}}
