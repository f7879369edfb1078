#!/usr/bin/env cwl-runner
# Two processes in one $graph document; the test runs the one that is not #main by naming it: graph.cwl#shout
cwlVersion: v1.2
$graph:
  - id: main
    class: Workflow
    inputs:
      text: File
    outputs:
      shouted: {type: File, outputSource: shout/shouted}
    steps:
      shout:
        run: "#shout"
        in: {text: text}
        out: [shouted]
  - id: shout
    class: CommandLineTool
    inputs:
      text: File
    baseCommand: [tr, a-z, A-Z]
    stdin: $(inputs.text.path)
    stdout: shouted.txt
    outputs:
      shouted: stdout
