import Adapters
import Foundation
import Relay

// The command line: `relay serve`, `relay check`, `relay version`. Exit codes: 0 ok, 1 runtime failure,
// 2 usage or configuration error.
let exitCode = Command.run(Array(CommandLine.arguments.dropFirst()))
exit(exitCode)
