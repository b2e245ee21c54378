// The VS Code client: starts `dslc lsp` over stdio for .dl files. Everything else
// (diagnostics, hover, completion, definition, formatting) comes from the server.
"use strict";

const vscode = require("vscode");
const { LanguageClient, TransportKind } = require("vscode-languageclient/node");

let client;

function activate(context) {
  const config = vscode.workspace.getConfiguration("dslc");
  const command = config.get("server.command", "dslc");
  const args = config.get("server.args", ["lsp"]);
  const server = { command, args, transport: TransportKind.stdio };
  client = new LanguageClient(
    "dslc",
    "dslc language server",
    { run: server, debug: server },
    { documentSelector: [{ language: "dslc" }] },
  );
  context.subscriptions.push(
    vscode.commands.registerCommand("dslc.restartServer", () => client.restart()),
  );
  return client.start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
