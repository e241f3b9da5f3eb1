# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_lectern_global_optspecs
    string join \n c/config= socket= json h/help V/version
end

function __fish_lectern_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_lectern_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_lectern_using_subcommand
    set -l cmd (__fish_lectern_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c lectern -n "__fish_lectern_needs_command" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_needs_command" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_needs_command" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_needs_command" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_needs_command" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_needs_command" -f -a "status" -d 'What the box is doing'
complete -c lectern -n "__fish_lectern_needs_command" -f -a "record" -d 'Start or stop an ad-hoc recording'
complete -c lectern -n "__fish_lectern_needs_command" -f -a "recordings" -d 'Recordings with durations, parts, segments, bytes'
complete -c lectern -n "__fish_lectern_needs_command" -f -a "segments" -d 'The segments of one recording'
complete -c lectern -n "__fish_lectern_needs_command" -f -a "uploads" -d 'Upload jobs: progress, rate, ETA, attempts, endpoint, last error'
complete -c lectern -n "__fish_lectern_needs_command" -f -a "update" -d 'Install a RAUC bundle and reboot into it, each step deferred while recording or stitching, or while a lecture starts within 15 min'
complete -c lectern -n "__fish_lectern_needs_command" -f -a "provision" -d 'Apply a signed provisioning bundle (docs/provisioning.md), e.g. from a USB stick; refused while recording or stitching, or while a lecture starts within 15 min'
complete -c lectern -n "__fish_lectern_needs_command" -f -a "preview" -d 'Save the running recording\'s newest preview picture (a JPEG, about one a second while asked for) and print the audio meter: is the camera pointed right, is the mic live?'
complete -c lectern -n "__fish_lectern_needs_command" -f -a "schedule" -d 'Calendar files'
complete -c lectern -n "__fish_lectern_needs_command" -f -a "config" -d 'Config files'
complete -c lectern -n "__fish_lectern_needs_command" -f -a "sim" -d 'The simulated board'
complete -c lectern -n "__fish_lectern_needs_command" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c lectern -n "__fish_lectern_needs_command" -f -a "man" -d 'Print the man page (roff), e.g. `lectern man > lectern.1`'
complete -c lectern -n "__fish_lectern_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lectern -n "__fish_lectern_using_subcommand status" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand status" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand status" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand status" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_using_subcommand status" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand record; and not __fish_seen_subcommand_from start stop help" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand record; and not __fish_seen_subcommand_from start stop help" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand record; and not __fish_seen_subcommand_from start stop help" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand record; and not __fish_seen_subcommand_from start stop help" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_using_subcommand record; and not __fish_seen_subcommand_from start stop help" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand record; and not __fish_seen_subcommand_from start stop help" -f -a "start" -d 'Start an ad-hoc recording'
complete -c lectern -n "__fish_lectern_using_subcommand record; and not __fish_seen_subcommand_from start stop help" -f -a "stop" -d 'Stop the current recording'
complete -c lectern -n "__fish_lectern_using_subcommand record; and not __fish_seen_subcommand_from start stop help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lectern -n "__fish_lectern_using_subcommand record; and __fish_seen_subcommand_from start" -l title -d 'Its title' -r
complete -c lectern -n "__fish_lectern_using_subcommand record; and __fish_seen_subcommand_from start" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand record; and __fish_seen_subcommand_from start" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand record; and __fish_seen_subcommand_from start" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand record; and __fish_seen_subcommand_from start" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_using_subcommand record; and __fish_seen_subcommand_from start" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand record; and __fish_seen_subcommand_from stop" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand record; and __fish_seen_subcommand_from stop" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand record; and __fish_seen_subcommand_from stop" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand record; and __fish_seen_subcommand_from stop" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_using_subcommand record; and __fish_seen_subcommand_from stop" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand record; and __fish_seen_subcommand_from help" -f -a "start" -d 'Start an ad-hoc recording'
complete -c lectern -n "__fish_lectern_using_subcommand record; and __fish_seen_subcommand_from help" -f -a "stop" -d 'Stop the current recording'
complete -c lectern -n "__fish_lectern_using_subcommand record; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lectern -n "__fish_lectern_using_subcommand recordings" -l newest -d 'Only the newest N (by start), oldest of them first' -r
complete -c lectern -n "__fish_lectern_using_subcommand recordings" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand recordings" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand recordings" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand recordings" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_using_subcommand recordings" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand segments" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand segments" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand segments" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand segments" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_using_subcommand segments" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand uploads; and not __fish_seen_subcommand_from retry help" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand uploads; and not __fish_seen_subcommand_from retry help" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand uploads; and not __fish_seen_subcommand_from retry help" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand uploads; and not __fish_seen_subcommand_from retry help" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_using_subcommand uploads; and not __fish_seen_subcommand_from retry help" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand uploads; and not __fish_seen_subcommand_from retry help" -f -a "retry" -d 'Queue a parked or waiting upload again, now'
complete -c lectern -n "__fish_lectern_using_subcommand uploads; and not __fish_seen_subcommand_from retry help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lectern -n "__fish_lectern_using_subcommand uploads; and __fish_seen_subcommand_from retry" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand uploads; and __fish_seen_subcommand_from retry" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand uploads; and __fish_seen_subcommand_from retry" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand uploads; and __fish_seen_subcommand_from retry" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_using_subcommand uploads; and __fish_seen_subcommand_from retry" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand uploads; and __fish_seen_subcommand_from help" -f -a "retry" -d 'Queue a parked or waiting upload again, now'
complete -c lectern -n "__fish_lectern_using_subcommand uploads; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lectern -n "__fish_lectern_using_subcommand update" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand update" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand update" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand update" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_using_subcommand update" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand provision" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand provision" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand provision" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand provision" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_using_subcommand provision" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand preview" -s o -l out -d 'Where to write the JPEG' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand preview" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand preview" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand preview" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand preview" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_using_subcommand preview" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand schedule; and not __fish_seen_subcommand_from parse help" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand schedule; and not __fish_seen_subcommand_from parse help" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand schedule; and not __fish_seen_subcommand_from parse help" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand schedule; and not __fish_seen_subcommand_from parse help" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_using_subcommand schedule; and not __fish_seen_subcommand_from parse help" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand schedule; and not __fish_seen_subcommand_from parse help" -f -a "parse" -d 'The events the agent would store from an .ics file, as JSON (uid, start/end RFC 3339 UTC, title, workflow, device names...; recurrences 14 days ahead). Each event it would skip, or a file it would refuse, is printed as FILE:LINE: why on stderr, and the exit is 1'
complete -c lectern -n "__fish_lectern_using_subcommand schedule; and not __fish_seen_subcommand_from parse help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lectern -n "__fish_lectern_using_subcommand schedule; and __fish_seen_subcommand_from parse" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand schedule; and __fish_seen_subcommand_from parse" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand schedule; and __fish_seen_subcommand_from parse" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand schedule; and __fish_seen_subcommand_from parse" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_using_subcommand schedule; and __fish_seen_subcommand_from parse" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand schedule; and __fish_seen_subcommand_from help" -f -a "parse" -d 'The events the agent would store from an .ics file, as JSON (uid, start/end RFC 3339 UTC, title, workflow, device names...; recurrences 14 days ahead). Each event it would skip, or a file it would refuse, is printed as FILE:LINE: why on stderr, and the exit is 1'
complete -c lectern -n "__fish_lectern_using_subcommand schedule; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lectern -n "__fish_lectern_using_subcommand config; and not __fish_seen_subcommand_from check help" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand config; and not __fish_seen_subcommand_from check help" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand config; and not __fish_seen_subcommand_from check help" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand config; and not __fish_seen_subcommand_from check help" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_using_subcommand config; and not __fish_seen_subcommand_from check help" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand config; and not __fish_seen_subcommand_from check help" -f -a "check" -d 'Validate a config exactly as lecternd would; print each problem with file, key and expectation (exit 1), or that it is valid'
complete -c lectern -n "__fish_lectern_using_subcommand config; and not __fish_seen_subcommand_from check help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lectern -n "__fish_lectern_using_subcommand config; and __fish_seen_subcommand_from check" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand config; and __fish_seen_subcommand_from check" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand config; and __fish_seen_subcommand_from check" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand config; and __fish_seen_subcommand_from check" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_using_subcommand config; and __fish_seen_subcommand_from check" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "check" -d 'Validate a config exactly as lecternd would; print each problem with file, key and expectation (exit 1), or that it is valid'
complete -c lectern -n "__fish_lectern_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and not __fish_seen_subcommand_from button powerfail led state help" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand sim; and not __fish_seen_subcommand_from button powerfail led state help" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand sim; and not __fish_seen_subcommand_from button powerfail led state help" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and not __fish_seen_subcommand_from button powerfail led state help" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and not __fish_seen_subcommand_from button powerfail led state help" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and not __fish_seen_subcommand_from button powerfail led state help" -f -a "button" -d 'Press the simulated board\'s button'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and not __fish_seen_subcommand_from button powerfail led state help" -f -a "powerfail" -d 'Assert or clear the simulated power-fail line'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and not __fish_seen_subcommand_from button powerfail led state help" -f -a "led" -d 'The simulated LED'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and not __fish_seen_subcommand_from button powerfail led state help" -f -a "state" -d 'The simulated board\'s LED and inputs, as one JSON line'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and not __fish_seen_subcommand_from button powerfail led state help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from button" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from button" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from button" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from button" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from button" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from powerfail" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from powerfail" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from powerfail" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from powerfail" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from powerfail" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from led" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from led" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from led" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from led" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from led" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from state" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from state" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from state" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from state" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from state" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from help" -f -a "button" -d 'Press the simulated board\'s button'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from help" -f -a "powerfail" -d 'Assert or clear the simulated power-fail line'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from help" -f -a "led" -d 'The simulated LED'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from help" -f -a "state" -d 'The simulated board\'s LED and inputs, as one JSON line'
complete -c lectern -n "__fish_lectern_using_subcommand sim; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lectern -n "__fish_lectern_using_subcommand completions" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand completions" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand completions" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand completions" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_using_subcommand completions" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand man" -s c -l config -d 'The daemon\'s config file (for its control socket and the sim board\'s socket)' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand man" -l socket -d 'The control socket, instead of the one the config names' -r -F
complete -c lectern -n "__fish_lectern_using_subcommand man" -l json -d 'Print the daemon\'s reply as JSON, unchanged (docs/control-api.md)'
complete -c lectern -n "__fish_lectern_using_subcommand man" -s h -l help -d 'Print help'
complete -c lectern -n "__fish_lectern_using_subcommand man" -s V -l version -d 'Print version'
complete -c lectern -n "__fish_lectern_using_subcommand help; and not __fish_seen_subcommand_from status record recordings segments uploads update provision preview schedule config sim completions man help" -f -a "status" -d 'What the box is doing'
complete -c lectern -n "__fish_lectern_using_subcommand help; and not __fish_seen_subcommand_from status record recordings segments uploads update provision preview schedule config sim completions man help" -f -a "record" -d 'Start or stop an ad-hoc recording'
complete -c lectern -n "__fish_lectern_using_subcommand help; and not __fish_seen_subcommand_from status record recordings segments uploads update provision preview schedule config sim completions man help" -f -a "recordings" -d 'Recordings with durations, parts, segments, bytes'
complete -c lectern -n "__fish_lectern_using_subcommand help; and not __fish_seen_subcommand_from status record recordings segments uploads update provision preview schedule config sim completions man help" -f -a "segments" -d 'The segments of one recording'
complete -c lectern -n "__fish_lectern_using_subcommand help; and not __fish_seen_subcommand_from status record recordings segments uploads update provision preview schedule config sim completions man help" -f -a "uploads" -d 'Upload jobs: progress, rate, ETA, attempts, endpoint, last error'
complete -c lectern -n "__fish_lectern_using_subcommand help; and not __fish_seen_subcommand_from status record recordings segments uploads update provision preview schedule config sim completions man help" -f -a "update" -d 'Install a RAUC bundle and reboot into it, each step deferred while recording or stitching, or while a lecture starts within 15 min'
complete -c lectern -n "__fish_lectern_using_subcommand help; and not __fish_seen_subcommand_from status record recordings segments uploads update provision preview schedule config sim completions man help" -f -a "provision" -d 'Apply a signed provisioning bundle (docs/provisioning.md), e.g. from a USB stick; refused while recording or stitching, or while a lecture starts within 15 min'
complete -c lectern -n "__fish_lectern_using_subcommand help; and not __fish_seen_subcommand_from status record recordings segments uploads update provision preview schedule config sim completions man help" -f -a "preview" -d 'Save the running recording\'s newest preview picture (a JPEG, about one a second while asked for) and print the audio meter: is the camera pointed right, is the mic live?'
complete -c lectern -n "__fish_lectern_using_subcommand help; and not __fish_seen_subcommand_from status record recordings segments uploads update provision preview schedule config sim completions man help" -f -a "schedule" -d 'Calendar files'
complete -c lectern -n "__fish_lectern_using_subcommand help; and not __fish_seen_subcommand_from status record recordings segments uploads update provision preview schedule config sim completions man help" -f -a "config" -d 'Config files'
complete -c lectern -n "__fish_lectern_using_subcommand help; and not __fish_seen_subcommand_from status record recordings segments uploads update provision preview schedule config sim completions man help" -f -a "sim" -d 'The simulated board'
complete -c lectern -n "__fish_lectern_using_subcommand help; and not __fish_seen_subcommand_from status record recordings segments uploads update provision preview schedule config sim completions man help" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell)'
complete -c lectern -n "__fish_lectern_using_subcommand help; and not __fish_seen_subcommand_from status record recordings segments uploads update provision preview schedule config sim completions man help" -f -a "man" -d 'Print the man page (roff), e.g. `lectern man > lectern.1`'
complete -c lectern -n "__fish_lectern_using_subcommand help; and not __fish_seen_subcommand_from status record recordings segments uploads update provision preview schedule config sim completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c lectern -n "__fish_lectern_using_subcommand help; and __fish_seen_subcommand_from record" -f -a "start" -d 'Start an ad-hoc recording'
complete -c lectern -n "__fish_lectern_using_subcommand help; and __fish_seen_subcommand_from record" -f -a "stop" -d 'Stop the current recording'
complete -c lectern -n "__fish_lectern_using_subcommand help; and __fish_seen_subcommand_from uploads" -f -a "retry" -d 'Queue a parked or waiting upload again, now'
complete -c lectern -n "__fish_lectern_using_subcommand help; and __fish_seen_subcommand_from schedule" -f -a "parse" -d 'The events the agent would store from an .ics file, as JSON (uid, start/end RFC 3339 UTC, title, workflow, device names...; recurrences 14 days ahead). Each event it would skip, or a file it would refuse, is printed as FILE:LINE: why on stderr, and the exit is 1'
complete -c lectern -n "__fish_lectern_using_subcommand help; and __fish_seen_subcommand_from config" -f -a "check" -d 'Validate a config exactly as lecternd would; print each problem with file, key and expectation (exit 1), or that it is valid'
complete -c lectern -n "__fish_lectern_using_subcommand help; and __fish_seen_subcommand_from sim" -f -a "button" -d 'Press the simulated board\'s button'
complete -c lectern -n "__fish_lectern_using_subcommand help; and __fish_seen_subcommand_from sim" -f -a "powerfail" -d 'Assert or clear the simulated power-fail line'
complete -c lectern -n "__fish_lectern_using_subcommand help; and __fish_seen_subcommand_from sim" -f -a "led" -d 'The simulated LED'
complete -c lectern -n "__fish_lectern_using_subcommand help; and __fish_seen_subcommand_from sim" -f -a "state" -d 'The simulated board\'s LED and inputs, as one JSON line'
