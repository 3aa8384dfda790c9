// Stand-in for the parts of LiteGraph's LGraphNode that extensions use: widgets and addDOMWidget.
export class StandInNode {
  constructor() {
    this.widgets = [];
    this.el = document.createElement("div");
    this.el.className = "node";
    document.body.append(this.el);
  }

  addDOMWidget(name, type, element, options) {
    const widget = { name, type, element, options };
    this.widgets.push(widget);
    this.el.append(element);
    return widget;
  }
}
