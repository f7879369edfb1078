# A tool whose input and output share a name, emitting a subdirectory of its read-only InitialWorkDir input
cwlVersion: v1.2
class: CommandLineTool
requirements:
  InitialWorkDirRequirement:
    listing:
      - {entry: $(inputs.dir), writable: false}
inputs:
  dir: Directory
outputs:
  dir: {type: Directory, outputBinding: {glob: dir/sub}}
baseCommand: "true"
