// Package diagrams draws threadctl's machine and workflows: state diagrams
// derived from the states tables, and sequence diagrams of the seed
// workflows recorded by playing them against a running threadctl and its
// simulator, so neither can drift from the code.
package diagrams
