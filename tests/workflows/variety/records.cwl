cwlVersion: v1.2
class: CommandLineTool
doc: A record with a File field, and one-letter inputs (cwltool's -h and -x), given on the command line.
baseCommand: [sh, -c, 'echo "$@"; cat "$0"']
stdout: said.txt
inputs:
  range:
    type:
      type: record
      fields:
        low: {type: int, inputBinding: {position: 1, prefix: --low}}
        high: {type: int, inputBinding: {position: 2, prefix: --high}}
        notes: {type: File, inputBinding: {position: 0}}
  h: {type: string, default: none, inputBinding: {position: 3, prefix: -h}}
  x: {type: string, default: none, inputBinding: {position: 4, prefix: -x}}
outputs:
  said: stdout
