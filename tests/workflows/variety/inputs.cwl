cwlVersion: v1.2
class: CommandLineTool
doc: Echoes its inputs, given on the command line as cwltool takes them, and counts a file's lines.
requirements:
  InlineJavascriptRequirement: {}
baseCommand: [sh, -c, 'echo "$@"; wc -l < "$0"']
stdout: said.txt
inputs:
  reads: {type: File, inputBinding: {position: 0}}
  mode: {type: string, inputBinding: {position: 1}}
  threads: {type: int, default: 1, inputBinding: {position: 2, prefix: --threads}}
  verbose: {type: boolean, default: false, inputBinding: {position: 3, prefix: --verbose}}
  tags: {type: "string[]?", inputBinding: {position: 4}}
  limits:
    type:
      - "null"
      - type: record
        fields:
          low: {type: int, inputBinding: {position: 5, prefix: --low}}
          high: {type: int, inputBinding: {position: 6, prefix: --high}}
  label: {type: "string?", default: plain, inputBinding: {position: 7, prefix: --label}}
outputs:
  said: {type: stdout}
  threads_out: {type: int, outputBinding: {outputEval: $(inputs.threads)}}
