cwlVersion: v1.2
class: CommandLineTool
doc: Uses one of cwltool's extensions, which cwltool loads only with --enable-ext.
$namespaces: {cwltool: "http://commonwl.org/cwltool#"}
requirements:
  cwltool:ShmSize: {shmSize: 64m}
baseCommand: [echo, extended]
stdout: extended.txt
inputs: []
outputs:
  said: {type: stdout}
