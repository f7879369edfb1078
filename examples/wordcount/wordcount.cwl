#!/usr/bin/env cwl-runner
cwlVersion: v1.2
class: Workflow
doc: |
  Split a text into lowercase words, then count them and list the most frequent.
inputs:
  text: File
  top:
    type: int
    default: 10
outputs:
  words:
    type: File
    outputSource: split/words
  top_words:
    type: File
    outputSource: count/top_words
steps:
  split:
    run:
      class: CommandLineTool
      doc: One lowercase word per line.
      baseCommand: [sh, -c, 'tr -cs "[:alpha:]" "\n" < "$0" | tr "[:upper:]" "[:lower:]" | grep -v "^$"']
      inputs:
        text: {type: File, inputBinding: {position: 1}}
      stdout: words.txt
      outputs:
        words: stdout
    in: {text: text}
    out: [words]
  count:
    run:
      class: CommandLineTool
      doc: The most frequent words with their counts.
      baseCommand: [sh, -c, 'sort "$0" | uniq -c | sort -k1,1nr -k2 | head -n "$1"']
      inputs:
        words: {type: File, inputBinding: {position: 1}}
        top: {type: int, inputBinding: {position: 2}}
      stdout: top-words.txt
      outputs:
        top_words: stdout
    in: {words: split/words, top: top}
    out: [top_words]
