#include "actors/api/jinja_template.h"

#include "actors/api/jinja_ast.h"

namespace sepal::api::jinja {

struct Template::Parsed {
  Body body;
};

std::variant<Template, TemplateError> Template::parse(const std::string& source) {
  try {
    auto parsed = std::make_shared<Parsed>();
    parsed->body = parse_template(source);
    return Template(std::move(parsed));
  } catch (const TemplateError& e) {
    return e;
  }
}

std::variant<std::string, TemplateError> Template::render(const nlohmann::ordered_json& context) const {
  try {
    return render_template(parsed_->body, Value::from_json(context));
  } catch (const TemplateError& e) {
    return e;
  } catch (const std::bad_alloc&) {
    return TemplateError{"the template ran out of memory"};
  }
}

}  // namespace sepal::api::jinja
